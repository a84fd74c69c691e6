"""The pieces of `relance simulate`: engagement rates and draws, synthetic leads, the projected funnel, the loop (`simulator.py`).

The loop itself is `relance.simulation.simulator.simulate`.
"""
