"""What the account holds, as IB last said, and the active legs the stream follows.

book.py               AccountBook: holdings by (account, conid), closes and resizes stamped when IB says them
holdings.py           Holding: one position with its last payload; applying a reqPnLSingle answer
active_legs.py        ActiveLegs: the registry as the stream follows it (last known kept if unreadable)
position_list.py      PositionList: IB's complete position list at one moment, and what it proves
connect_reconcile.py  ConnectReconciler: the book against that list at every (re)connect
"""
