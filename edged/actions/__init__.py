"""If/then actions: rules on live values that fire and clear commands and events.

``edged.actions.config`` reads ``[[actions]]`` tables into frozen rules and checks them
against the devices' descriptions; ``edged.actions.machine`` is the pure held-for and
hysteresis state machine of one rule; ``edged.actions.engine`` evaluates the rules on
live values, runs their actions through the drivers' command capability and reports.
"""
