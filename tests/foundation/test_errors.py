"""Errors say what a hardware engineer needs: values, algorithm, port, baud, deadline."""

from vendhw.errors import ChecksumError, FramingError, NoResponseError, VendhwError


def test_checksum_error_names_values_and_algorithm() -> None:
    exc = ChecksumError(protocol="ssp", algorithm="CRC-16/SSP", expected=0x8265,
                        received=0x8266, width=2)
    text = str(exc)
    assert "0x8265" in text and "0x8266" in text and "CRC-16/SSP" in text
    assert text.startswith("ssp:")
    assert isinstance(exc, FramingError) and isinstance(exc, VendhwError)


def test_no_response_names_port_baud_deadline() -> None:
    exc = NoResponseError("no reply to POLL", port="/dev/ttyUSB0", baudrate=57600, timeout=0.1)
    text = str(exc)
    assert "/dev/ttyUSB0" in text and "57600" in text and "100 ms" in text
    assert isinstance(exc, TimeoutError)
