"""fal's docs' app with an HTTP, a websocket and a realtime endpoint, imports changed to ``yurt``.

Source: the "Server-Side Implementation" example of fal's documentation, Realtime Endpoints
(https://docs.fal.ai/documentation/development/realtime; earlier at
fal.ai/docs/private-serverless-models/real-time-endpoints), by Features and Labels Inc. (fal.ai);
documentation text, no licence stated. The app is as there, with the imports the page's snippet
leaves out (``Field``, ``WebSocket``) written in. It has no weights.
"""

import yurt as fal
from fastapi import WebSocket
from pydantic import BaseModel, Field


class Input(BaseModel):
    prompt: str = Field()


class Output(BaseModel):
    output: str = Field()


class RealtimeApp(fal.App):
    @fal.endpoint("/")
    def generate(self, input: Input) -> Output:
        return Output(output=input.prompt)

    @fal.endpoint("/ws", is_websocket=True)
    async def generate_ws(self, websocket: WebSocket) -> None:
        await websocket.accept()
        for _ in range(3):
            await websocket.send_json({"message": "Hello world!"})
        await websocket.close()

    @fal.realtime("/realtime")
    def generate_rt(self, input: Input) -> Output:
        return Output(output=input.prompt)
