"""Data layer: records, input contracts, readers, simulators, splits and datamodules.

Import-light: names are resolved on first access, so `from neurofound.data.contracts import ...`
(used by models) does not import Lightning, brian2 or pynwb.
"""

from __future__ import annotations

from neurofound._lazy import lazy_exports

_EXPORTS = {
    "DEFAULT_CONFIG": "neurofound.data.simulate",
    "InputContract": "neurofound.data.contracts",
    "SensorContract": "neurofound.data.contracts",
    "SensorCorpus": "neurofound.data.sensors",
    "SensorDataModule": "neurofound.data.sensor_datamodule",
    "SensorRecording": "neurofound.data.sensors",
    "TrialDataModule": "neurofound.data.sensor_datamodule",
    "SpikeContract": "neurofound.data.contracts",
    "SpikeDataModule": "neurofound.data.datamodule",
    "SpikeRecording": "neurofound.data.records",
    "Splits": "neurofound.data.splits",
    "VolumeContract": "neurofound.data.contracts",
    "VoxelContract": "neurofound.data.contracts",
    "bin_grid": "neurofound.data.binning",
    "bin_spikes": "neurofound.data.binning",
    "cache_root": "neurofound.data.cache",
    "cached": "neurofound.data.cache",
    "check_no_leakage": "neurofound.data.splits",
    "config_hash": "neurofound.data.cache",
    "lif_config": "neurofound.data.simulate",
    "read_nwb": "neurofound.data.nwb",
    "resolve_split_mode": "neurofound.data.splits",
    "simulate_lif_network": "neurofound.data.simulate",
    "simulate_meeg": "neurofound.data.meeg_sim",
    "read_corpus": "neurofound.data.sensor_datamodule",
    "split_by_group": "neurofound.data.splits",
    "split_intervals": "neurofound.data.splits",
    "split_time_blocks": "neurofound.data.splits",
    "split_trials": "neurofound.data.splits",
}

__all__, __getattr__, __dir__ = lazy_exports("neurofound.data", _EXPORTS)
