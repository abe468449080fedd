"""fal's smallest app, as fal's docs show it, with ``import fal`` changed to ``import yurt as fal``.

Source: the "A Basic Endpoint" example of fal's documentation, Endpoints overview
(https://docs.fal.ai/documentation/development/endpoints-overview), by Features and Labels Inc.
(fal.ai); documentation text, no licence stated. The app's use of fal is as there; the model the
example leaves undefined (``load_model()``) is the small stand-in below.
"""

import yurt as fal
from pydantic import BaseModel


def load_model():
    """Stand-in for the example's model: reverses the prompt, so the output shows it ran."""
    return lambda prompt: prompt[::-1]


class Input(BaseModel):
    prompt: str


class Output(BaseModel):
    text: str


class MyApp(fal.App):
    machine_type = "GPU-A100"

    def setup(self):
        self.model = load_model()

    @fal.endpoint("/")
    def generate(self, input: Input) -> Output:
        return Output(text=self.model(input.prompt))
