"""Pure decisions, no I/O: which held contracts stream, rotate or queue.

plan.py         route(): held contracts -> long-lived lines, the rotating pool, or the batch queue
risk_score.py   the documented risk score that orders active legs
risk_inputs.py  a leg's risk inputs from what the stream knows (contract, positions, greeks)
ranking.py      RiskRanking: every leg's score, re-ranked on a timer
rotation.py     RotationScheduler: long-lived lines for the riskiest, a bounded rotation for the rest
"""
