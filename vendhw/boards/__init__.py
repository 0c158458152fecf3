"""Board profiles as data: :class:`BoardProfile` loading and the vend outcomes.

Neutral ground for the board drivers (:mod:`vendhw.devices.boards`) and the board simulator
(:mod:`vendhw.sim.boards`): both import it, neither imports the other.
"""
