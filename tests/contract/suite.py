"""The contract suite ships with cloudtune as :mod:`cloudtune.testing` (so plugin authors run it too);
this name stays for test modules written before it moved."""

from cloudtune.testing import ContractEnv, ProviderContract

__all__ = ["ContractEnv", "ProviderContract"]
