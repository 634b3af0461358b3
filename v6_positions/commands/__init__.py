"""The `v6-positions` subcommands; each module registers its own, `v6_positions/cli.py` assembles them.

stream.py    `stream`: the streaming leg outside Dagster, with a status line
status.py    `status`: what the lake says (table versions, queue backlog, ages)
registry.py  `registry add|deactivate|list`: the strategy registry
simulate.py  `simulate`: the TWS-protocol gateway simulator
launch.py    `demo` / `up`: Dagster (and the simulator) on 127.0.0.1
"""
