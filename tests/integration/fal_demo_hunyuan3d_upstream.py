"""A stand-in for fal's hosted ``fal-ai/hunyuan3d`` model, which ``fal_demo_hunyuan3d.py`` calls.

Served as ``yurt run ... --owner fal-ai``; answers ``/v2/mini/turbo`` with a mesh file
description as fal's model does, and logs one line so a caller's ``with_logs`` has one to show.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

import yurt


class MeshRequest(BaseModel):
    input_image_url: str
    num_inference_steps: int
    seed: int | None = None
    textured_mesh: bool = False


class Hunyuan3DStandIn(yurt.App, name="hunyuan3d", keep_alive=300):
    @yurt.endpoint("/v2/mini/turbo")
    def mesh(self, body: MeshRequest) -> dict[str, Any]:
        print(f"meshing {body.input_image_url} in {body.num_inference_steps} steps")
        name = "textured_mesh.glb" if body.textured_mesh else "white_mesh.glb"
        return {
            "model_mesh": {
                "url": f"https://example.invalid/{name}",
                "content_type": "application/octet-stream",
                "file_name": name,
                "file_size": 720696,
            },
            "seed": body.seed if body.seed is not None else 42,
        }
