"""Settings shared by every test, set before any test module is imported."""

from tests.support.testenv import pin_documented_day

pin_documented_day()
