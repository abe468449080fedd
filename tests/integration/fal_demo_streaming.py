"""fal's docs' streaming example (SDXL previews as server-sent events), imports changed.

Source: "Example: Streaming Intermediate Steps with SDXL" in fal's documentation, Streaming
Endpoints (https://docs.fal.ai/documentation/development/streaming), by Features and Labels Inc.
(fal.ai); documentation text, no licence stated. Written from what the page shows and says: a
``StreamInput`` model, an ``@fal.endpoint("/stream")`` method returning a FastAPI
``StreamingResponse`` of ``data: <json>`` events, a pipeline running in a thread whose step
callback puts a preview on a ``queue.Queue`` every 5 steps, and a final event (the class name
and machine type are this file's). SDXL, its tiny preview VAE and torch are replaced by a
stand-in pipeline that "denoises" a string; when ``FAL_DEMO_STREAM_GATE`` names a file, the
stand-in waits after its first preview until that file exists, so a test can show the first
event reached the caller before the rest was made.
"""

import json
import os
import threading
import time
from pathlib import Path
from queue import Queue

import yurt as fal
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field


class StandInPipeline:
    """Stand-in for the SDXL pipeline: each step reveals one more character of the prompt."""

    def __call__(self, prompt, num_inference_steps, callback_on_step_end):
        latents = ""
        for step in range(num_inference_steps):
            latents = prompt[: len(prompt) * (step + 1) // num_inference_steps]
            callback_on_step_end(self, step, None, {"latents": latents})
        return latents


def gate_opened(deadline_s=30.0):
    """Whether the test's gate file (if one is named) appeared within the deadline."""
    gate = os.environ.get("FAL_DEMO_STREAM_GATE")
    deadline = time.monotonic() + deadline_s
    while gate and not Path(gate).exists():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


class StreamInput(BaseModel):
    prompt: str = Field(description="The prompt to generate an image from.")
    negative_prompt: str = Field(default="blurry, low quality")
    num_inference_steps: int = Field(default=20, ge=1, le=50)


class SDXLStreaming(fal.App, keep_alive=300):
    machine_type = "GPU-H100"

    def setup(self):
        self.pipe = StandInPipeline()
        self.preview_vae = lambda latents: latents.upper()  # stand-in for taesdxl

    @fal.endpoint("/stream")
    def stream(self, input: StreamInput) -> StreamingResponse:
        events: Queue = Queue()

        def on_step_end(pipe, step, timestep, callback_kwargs):
            if step % 5 == 0:
                preview = self.preview_vae(callback_kwargs["latents"])
                events.put({"type": "progress", "step": step, "preview": preview})
                if step == 0 and not gate_opened():
                    events.put({"type": "error", "detail": "the first preview was not read"})
            return callback_kwargs

        def run() -> None:
            result = self.pipe(
                prompt=input.prompt,
                num_inference_steps=input.num_inference_steps,
                callback_on_step_end=on_step_end,
            )
            events.put({"type": "complete", "image": result.upper()})
            events.put(None)

        threading.Thread(target=run, daemon=True).start()

        def generate():
            while (event := events.get()) is not None:
                yield f"data: {json.dumps(event)}\n\n"

        return StreamingResponse(generate(), media_type="text/event-stream")
