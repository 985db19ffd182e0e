"""``croissant.json``: the store described in Croissant 1.1 JSON-LD, with the Responsible-AI fields.

It lists the card's parquet configs as record sets (every column a typed field; weight vectors as
float32 arrays of known shape), the HDF5 shards and the manifest as files, and the RAI fields the
NeurIPS datasets track asks for (collection, preprocessing, limitations, biases, use cases,
social impact, personal information, maintenance). Written by hand from the store (no
``mlcroissant`` at build time); the tests load and validate it with ``mlcroissant``.
"""

from __future__ import annotations

from typing import Any

from zoo_dataset.store import ZooStore
from zoo_dataset.store.files import sha256_file
from zoo_dataset.store.layout_on_disk import CROISSANT_FILE, MODELS_TABLE
from zoo_dataset.store.manifest import MANIFEST

from .hub_tables import HubConfig

CROISSANT = CROISSANT_FILE
CONFORMS_TO = "http://mlcommons.org/croissant/1.1"
LICENSE_URL = "https://creativecommons.org/licenses/by/4.0/"
CONTEXT = {
    "@language": "en",
    "@vocab": "https://schema.org/",
    "sc": "https://schema.org/",
    "cr": "http://mlcommons.org/croissant/",
    "rai": "http://mlcommons.org/croissant/RAI/",
    "dct": "http://purl.org/dc/terms/",
    "arrayShape": "cr:arrayShape",
    "citeAs": "cr:citeAs",
    "column": "cr:column",
    "conformsTo": "dct:conformsTo",
    "containedIn": "cr:containedIn",
    "data": {"@id": "cr:data", "@type": "@json"},
    "dataType": {"@id": "cr:dataType", "@type": "@vocab"},
    "description": {"@container": "@language"},
    "equivalentProperty": "cr:equivalentProperty",
    "examples": {"@id": "cr:examples", "@type": "@json"},
    "extract": "cr:extract",
    "field": "cr:field",
    "fileObject": "cr:fileObject",
    "fileProperty": "cr:fileProperty",
    "fileSet": "cr:fileSet",
    "format": "cr:format",
    "includes": "cr:includes",
    "isArray": "cr:isArray",
    "isLiveDataset": "cr:isLiveDataset",
    "jsonPath": "cr:jsonPath",
    "key": "cr:key",
    "md5": "cr:md5",
    "name": {"@container": "@language"},
    "parentField": "cr:parentField",
    "path": "cr:path",
    "recordSet": "cr:recordSet",
    "references": "cr:references",
    "regex": "cr:regex",
    "repeated": "cr:repeated",
    "replace": "cr:replace",
    "samplingRate": "cr:samplingRate",
    "separator": "cr:separator",
    "source": "cr:source",
    "subField": "cr:subField",
    "transform": "cr:transform",
}
DATA_TYPES = {"int": "sc:Integer", "float": "sc:Float", "bool": "sc:Boolean", "string": "sc:Text"}
CITATION = (
    "@misc{honegger2023sparsified, title={Sparsified Model Zoo Twins: Investigating Populations of Sparsified "
    "Neural Network Models}, author={Honegger, Dominik and Sch{\\\"u}rholt, Konstantin and Borth, Damian}, "
    "year={2023}, howpublished={\\url{https://modelzoos.cc}}}"
)


def croissant(store: ZooStore, configs: list[HubConfig], description: str, url: str | None = None) -> dict[str, Any]:
    """The Croissant JSON-LD of ``store`` whose card configs are ``configs`` (``url``: where it is published)."""
    spec, manifest = store.spec, store.manifest
    files = [
        _file_object(store, MODELS_TABLE, "application/x-parquet", "the models table: one row per model"),
        {  # a file set, not a file object with a sha256: the manifest records this file's own sha256
            "@type": "cr:FileSet", "@id": MANIFEST, "name": MANIFEST, "encodingFormat": "application/json",
            "description": "the store's index: schema, zoo spec, parameter layout, shards and the card's files "
            "with sha256", "includes": MANIFEST,
        },
    ]
    for population in store.populations:
        files.append({
            "@type": "cr:FileSet", "@id": f"shards-{population}", "name": f"shards-{population}",
            "description": f"HDF5 shards of the {population} population: weights, masks, log_alpha as "
            "[models, levels, epochs + 1, parameters] float32 / bool arrays, one row per model",
            "encodingFormat": "application/x-hdf5", "includes": f"{population}/*.h5",
        })
    for config in configs:
        files.append({
            "@type": "cr:FileSet", "@id": f"files-{config.name}", "name": f"files-{config.name}",
            "description": f"{config.name}: parquet files, one per split (train, validation, test)",
            "encodingFormat": "application/x-parquet", "includes": f"{config.folder}/*.parquet",
        })
    return {
        "@context": CONTEXT,
        "@type": "sc:Dataset",
        "conformsTo": CONFORMS_TO,
        "name": f"zoo-twins-{manifest.zoo}",
        "description": description,
        "license": LICENSE_URL,
        **({"url": url} if url else {}),
        "version": f"{manifest.schema_version}.0.0",
        "datePublished": manifest.created,
        "citeAs": CITATION,
        "creator": {"@type": "sc:Organization", "name": "zoo-twins"},
        "keywords": ["model zoo", "weight-space learning", "sparsification", "pruning", "variational dropout"],
        "isBasedOn": f"the {spec.dataset} image dataset (models trained on it)",
        **_responsible_ai(store),
        "distribution": files,
        "recordSet": [_record_set(config) for config in configs],
    }


def _file_object(store: ZooStore, relative: str, encoding: str, description: str) -> dict[str, Any]:
    return {
        "@type": "cr:FileObject", "@id": relative, "name": relative, "description": description,
        "contentUrl": relative, "encodingFormat": encoding, "sha256": sha256_file(store.zoo_dir / relative),
    }


def _record_set(config: HubConfig) -> dict[str, Any]:
    return {
        "@type": "cr:RecordSet", "@id": config.name, "name": config.name, "description": config.description,
        "field": [_field(config, name, feature) for name, feature in config.features.items()],
    }


def _field(config: HubConfig, name: str, feature: Any) -> dict[str, Any]:
    """One column; fixed-length lists and 2-D arrays become typed arrays with their shape."""
    from datasets import List, Value

    if isinstance(feature, Value):
        shape, dtype = [], feature.dtype
    elif isinstance(feature, List):
        shape, dtype = [feature.length], feature.feature.dtype
    else:  # Array2D ... Array5D
        shape, dtype = list(feature.shape), feature.dtype
    field: dict[str, Any] = {
        "@type": "cr:Field", "@id": f"{config.name}/{name}", "name": name, "dataType": _data_type(dtype),
        "source": {"fileSet": {"@id": f"files-{config.name}"}, "extract": {"column": name}},
    }
    if shape:
        field.update({"isArray": True, "arrayShape": ",".join(str(n) for n in shape)})
    return field


def _data_type(dtype: str) -> str:
    kind = "string" if dtype.endswith("string") else dtype.rstrip("0123456789").removeprefix("u")
    return DATA_TYPES[kind]


def _responsible_ai(store: ZooStore) -> dict[str, Any]:
    spec = store.spec
    return {
        "rai:dataCollection": (
            f"No data about people was collected. Every record was computed by the zoo-twins toolkit: {spec.size} "
            f"small CNNs ({spec.architecture}) trained on {spec.dataset} from the generating factors of the zoo "
            "spec, then sparsified by magnitude pruning and/or sparse variational dropout, every epoch recorded."
        ),
        "rai:dataCollectionType": ["Simulation", "Software Collection"],
        "rai:dataPreprocessingProtocol": [
            f"Images of {spec.dataset} preprocessed as in the original model zoos (docs/datasets.md).",
            "Metrics (accuracies, losses, sparsity, agreement) measured by an eval-mode pass after each epoch.",
        ],
        "rai:dataLimitations": (
            "Small CNNs on small image datasets: findings about these populations need not transfer to large "
            "models or other architectures. Twin populations depend on the chosen pruning levels and VD threshold."
        ),
        "rai:dataBiases": (
            f"The models inherit the biases of {spec.dataset} (class balance, image sources); the populations "
            "cover only the factor grid of the zoo spec (seeds, activations, optimizers, learning rates, ...)."
        ),
        "rai:dataUseCases": (
            "Weight-space learning: predicting model properties from weights, hyper-representations, studying "
            "sparsification. Not a benchmark for image classification and not for deployment."
        ),
        "rai:dataSocialImpact": (
            "Research data on neural network weights; no direct social impact expected. Sparsification research "
            "can lower the energy cost of inference."
        ),
        "rai:personalSensitiveInformation": "None: the records are model weights and metrics.",
        "rai:dataReleaseMaintenancePlan": (
            "Rebuildable bit for bit from the zoo spec with the zoo-twins toolkit; errors are fixed by new store "
            "versions (the manifest records the schema and code version)."
        ),
    }
