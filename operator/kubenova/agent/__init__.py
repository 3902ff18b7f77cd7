"""The node agent: selects its node's objects by label, runs driver steps, serves disk transfers."""
