"""``gradsign search``: the search config and the runner that spreads independent searches over Ray."""
