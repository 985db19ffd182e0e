"""Hyper-representations of VD twins (paper Sec. 4.2, App. G/H): an attention autoencoder over
per-neuron weight tokens that reconstructs weights and VD log-alpha maps, and linear probes on
its embeddings. Data come from ``loaders.ZooTrajectoryDataset(view="tokens")`` like any user's."""
