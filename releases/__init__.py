"""The published Model Zoos (modelzoos.cc) as they are released: the Zenodo client, the table of
records and archives, the Ray Tune ingest of original zoos and the conversion of the published VD
twins. Builders (``--from-original``) and loaders (``source="modelzoos"``) both use this layer; it
imports neither of them."""
