"""TABLETOP: the response playbook rehearsed as a scored exercise on a simulated clock.

A scenario (`scenario`) describes the exercise, the simulated world and its faults, the master
scenario events list (injects), the decisions asked of the players and the evaluation guide.
`world` holds the simulated adapters and clock the wiring hands to the same engine LIVE and
DRILL use; `exercise` jumps from event to event, `scoring` rates each capability target P, S,
M or U, and `report` writes the after-action report and improvement plan.
"""
