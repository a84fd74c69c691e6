"""The pieces of `relance simulate`: engagement rates and draws, synthetic leads, the report.

The loop itself is `relance.simulation.simulator.simulate`.
"""
