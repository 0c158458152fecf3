"""vendhw.devices"""
