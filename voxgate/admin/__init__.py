"""Operator views: system status, analytics aggregation and live metrics feeds.

May import ``voxgate.tenants``; must not import ``voxgate.server``, ``voxgate.sip``
or ``voxgate.agents``.
"""
