"""firmware_bridge: the serial protocol to the arm controller, safety limits and an emulator.

Imports only the standard library, numpy and pyserial. See PROTOCOL.md for the wire format.
"""
