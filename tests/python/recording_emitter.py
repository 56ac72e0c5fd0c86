"""The aws-xray-sdk's UDP emitter, keeping a copy of every document sent,
so a test can compare what the SDK sent with what tracelake stored."""
import json

from aws_xray_sdk.core.emitters.udp_emitter import UDPEmitter


class RecordingEmitter(UDPEmitter):
    """Sends over UDP like the default emitter and keeps what it sent."""

    def __init__(self, address):
        super().__init__(address)
        self.sent = []

    def send_entity(self, entity):
        self.sent.append(json.loads(entity.serialize()))
        super().send_entity(entity)
