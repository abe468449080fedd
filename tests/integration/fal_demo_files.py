"""fal's docs' input-file example (``download_file`` in an endpoint), with its imports changed.

Source: "Downloading Input Files" in fal's documentation, Working with Files
(https://docs.fal.ai/documentation/development/working-with-files), by Features and Labels Inc.
(fal.ai); documentation text, no licence stated. The class and endpoint are as there, a plain
``video_url: str`` parameter included (a query parameter, as FastAPI makes it). The page leaves
``self.model`` undefined; the stand-in set in ``setup()`` below "processes" a video by
describing the downloaded file.
"""

import yurt as fal
from yurt.toolkit import download_file


class StandInVideoModel:
    def process(self, path):
        with open(path, "rb") as f:
            data = f.read()
        return f"{len(data)} bytes starting {data[:4].decode(errors='replace')!r}"


class MyModel(fal.App):
    machine_type = "GPU-A100"

    def setup(self):
        self.model = StandInVideoModel()

    @fal.endpoint("/")
    def process(self, video_url: str) -> dict:
        local_path = download_file(video_url, target_dir="/tmp/inputs")
        result = self.model.process(str(local_path))
        return {"output": result}
