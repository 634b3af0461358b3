"""Errors of the lake layer: each names what the caller has to fix."""

from __future__ import annotations


class LakeError(ValueError):
    """Something about the Delta Lake tables prevents the operation."""


class LakeSchemaError(LakeError):
    """A table location holds something that is not the table we declared (not Delta, or another schema)."""

    def __init__(self, table: str, uri: str, reason: str) -> None:
        super().__init__(f"table {table!r} at {uri}: {reason}")
        self.table = table
        self.uri = uri
        self.reason = reason


class InvalidRowError(ValueError):
    """A row we were asked to write breaks the table's rules; nothing was written."""

    def __init__(self, field: str, value: object, reason: str, *, row_index: int | None = None) -> None:
        where = f"row {row_index}: " if row_index is not None else ""
        super().__init__(f"{where}{field}={value!r}: {reason}")
        self.field = field
        self.value = value
        self.reason = reason
        self.row_index = row_index

    def at_row(self, row_index: int) -> InvalidRowError:
        """The same error, saying which row of a batch it came from."""
        return InvalidRowError(self.field, self.value, self.reason, row_index=row_index)
