"""The image catalog (terminal_image/catalog.json): every terminal image a deployment can offer.

One entry per image names the Dockerfile stage it is built from, the ECR repository it is pushed to,
the template's task definition that runs it and the template parameter that carries its URI. `cloudide
setup` builds and deploys from it; the template's IMAGES map (the API's allow-list) is kept equal to it
by tests/operator/test_catalog.py.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
IMAGE_DIR = REPO_ROOT / "terminal_image"
CATALOG_PATH = IMAGE_DIR / "catalog.json"


@dataclass(frozen=True)
class CatalogImage:
    name: str
    target: str  # Dockerfile stage
    repository: str  # ECR repository name
    task_definition: str  # template.yaml logical id
    image_parameter: str  # template.yaml parameter holding the image URI
    description: str = ""


@dataclass(frozen=True)
class Catalog:
    default: str
    images: tuple[CatalogImage, ...]

    @property
    def names(self) -> list[str]:
        return [image.name for image in self.images]


def load_catalog(path: Path = CATALOG_PATH) -> Catalog:
    document = json.loads(path.read_text())
    images = tuple(
        CatalogImage(
            name=name,
            target=entry["target"],
            repository=entry["repository"],
            task_definition=entry["taskDefinition"],
            image_parameter=entry["imageParameter"],
            description=entry.get("description", ""),
        )
        for name, entry in document["images"].items()
    )
    catalog = Catalog(default=document["default"], images=images)
    if catalog.default not in catalog.names:
        raise ValueError(f"{path}: default image {catalog.default!r} is not in the catalog")
    return catalog
