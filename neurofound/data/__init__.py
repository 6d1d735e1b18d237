"""Data layer: records, readers, simulators, splits and datamodules (see docs/architecture.md)."""

from neurofound.data.cache import cache_root, cached_recording, config_hash
from neurofound.data.datamodule import SpikeDataModule
from neurofound.data.nwb import read_nwb
from neurofound.data.records import SpikeRecording
from neurofound.data.simulate import DEFAULT_CONFIG, lif_config, simulate_lif_network
from neurofound.data.splits import Splits, check_no_leakage, split_intervals

__all__ = [
    "DEFAULT_CONFIG",
    "SpikeDataModule",
    "SpikeRecording",
    "Splits",
    "cache_root",
    "cached_recording",
    "check_no_leakage",
    "config_hash",
    "lif_config",
    "read_nwb",
    "simulate_lif_network",
    "split_intervals",
]
