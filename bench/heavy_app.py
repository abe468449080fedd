"""A CPU app with heavy imports (numpy, scipy, pandas), for the cold start benchmark: runners
forked from a template that imported them, against fresh interpreters.

Its requirements are installed into an app environment (``bench/cold_start.py`` builds it before
timing), so, as in any app with requirements, its imports are in ``setup()`` (the deploying
process need not have them) and ``preload`` names them for the template.
"""

from typing import Any

from pydantic import BaseModel

import yurt


class Prompt(BaseModel):
    prompt: str


class Reply(BaseModel):
    text: str


class Heavy(yurt.App):
    app_name = "heavy"
    requirements = ["numpy", "scipy", "pandas"]
    preload = ["numpy", "scipy.linalg", "pandas"]
    keep_alive = 0.5

    def setup(self) -> None:
        import numpy
        import pandas
        import scipy.linalg

        frame: Any = pandas.DataFrame({"x": numpy.arange(4.0)})
        det = float(scipy.linalg.det(numpy.eye(3) * 2))
        self.prefix = f"echo ({len(frame)}, {det:g}): "

    @yurt.endpoint("/")
    def generate(self, body: Prompt) -> Reply:
        return Reply(text=self.prefix + body.prompt)
