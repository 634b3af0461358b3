"""Errors of the lake layer: each names what the caller has to fix."""

from __future__ import annotations


class LakeError(ValueError):
    """Something about the Delta Lake tables prevents the operation."""


class LakeSchemaError(LakeError):
    """A table location holds something other than the table we declared (not Delta, another schema),
    or cannot be opened at all (a corrupt log, unreachable storage)."""

    def __init__(self, table: str, uri: str, reason: str) -> None:
        super().__init__(f"table {table!r} at {uri}: {reason}")
        self.table = table
        self.uri = uri
        self.reason = reason


class InvalidRowError(ValueError):
    """A row we were asked to write breaks the table's rules; nothing was written.

    The message names the table (when known), the row of a batch (when there is one), the field and the
    value, e.g. ``position_queue row 637: right='Z': must be C or P (CALL/PUT accepted)``.
    """

    def __init__(
        self,
        field: str,
        value: object,
        reason: str,
        *,
        row_index: int | None = None,
        table: str | None = None,
    ) -> None:
        where = " ".join(
            part for part in (table, f"row {row_index}" if row_index is not None else None) if part
        )
        super().__init__(f"{where + ': ' if where else ''}{field}={value!r}: {reason}")
        self.field = field
        self.value = value
        self.reason = reason
        self.row_index = row_index
        self.table = table

    def at(self, table: str, row_index: int | None = None) -> InvalidRowError:
        """The same error, saying which table (and which row of a batch) it came from."""
        return InvalidRowError(self.field, self.value, self.reason, row_index=row_index, table=table)
