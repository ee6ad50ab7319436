"""Home Assistant MQTT discovery: the retained configs that make the bridge a device in Home
Assistant (``homeassistant = true``): on-air and talkback binary sensors, song and take sensors,
and, with ``commands = true``, play / stop / record / mark-take buttons.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from bridge import __version__
from bridge.devices._mqtt_publish import to_json

if TYPE_CHECKING:
    from bridge.devices.mqtt import MqttBridge


def discovery_configs(bridge: MqttBridge) -> dict[str, bytes]:
    """Retained Home Assistant MQTT discovery configs: topic -> JSON payload. Buttons are
    only announced with ``commands = true`` (their config is cleared otherwise)."""
    prefix, root, room = bridge.opts.discovery_prefix, bridge.root, bridge.room
    node = "studio_bridge_" + re.sub(r"[^A-Za-z0-9_-]", "_", room)
    device = {
        "identifiers": [node],
        "name": f"Studio bridge {room}",
        "manufacturer": "studio-bridge",
        "model": "studio-bridge",
        "sw_version": __version__,
    }
    common = {
        "availability_topic": f"{root}/status",
        "payload_available": "online",
        "payload_not_available": "offline",
        "device": device,
    }
    state = f"{root}/state"
    on_off = {"payload_on": "true", "payload_off": "false"}
    as_json = {"value_template": "{{ value_json }}"}
    entities: list[tuple[str, str, dict[str, object]]] = [
        ("binary_sensor", "on_air", {"name": "On air", "state_topic": f"{state}/transport/on_air",
                                     "icon": "mdi:record-rec", **on_off}),
        ("binary_sensor", "talkback", {"name": "Talkback", "state_topic": f"{state}/talkback",
                                       "icon": "mdi:microphone", **on_off}),
        ("sensor", "song", {"name": "Song", "state_topic": f"{state}/song", "icon": "mdi:music", **as_json}),
        ("sensor", "take", {"name": "Take", "state_topic": f"{state}/take", "icon": "mdi:pound", **as_json}),
    ]  # fmt: skip
    buttons = [
        ("play", "Play", "transport/play", "1", "mdi:play"),
        ("stop", "Stop", "transport/stop", "1", "mdi:stop"),
        ("record", "Record", "transport/record", "1", "mdi:record"),
        ("mark_take", "Mark take", "take/mark", "{}", "mdi:flag"),
    ]
    out: dict[str, bytes] = {}
    for component, object_id, config in entities:
        body = {**config, **common, **_entity_ids(component, node, object_id)}
        out[f"{prefix}/{component}/{node}/{object_id}/config"] = to_json(body)
    for object_id, name, cmd, press, icon in buttons:
        topic = f"{prefix}/button/{node}/{object_id}/config"
        if not bridge.opts.commands:
            out[topic] = b""
            continue
        body = {"name": name, "command_topic": f"{root}/cmd/{cmd}", "payload_press": press, "icon": icon,
                **common, **_entity_ids("button", node, object_id)}  # fmt: skip
        out[topic] = to_json(body)
    return out


def _entity_ids(component: str, node: str, object_id: str) -> dict[str, str]:
    """``unique_id`` and the entity id HA gives the entity when it is first discovered:
    ``default_entity_id`` (``<domain>.<object id>``, HA 2025.10+); the older ``object_id``
    option is deprecated since 2025.10 and ignored from 2026.4, so it is not sent. An entity id
    is lower case letters, digits and ``_`` (a room "Studio-B" gives ``studio_bridge_studio_b_...``)."""
    slug = re.sub(r"[^a-z0-9_]+", "_", f"{node}_{object_id}".lower()).strip("_")
    return {"unique_id": f"{node}_{object_id}", "default_entity_id": f"{component}.{slug}"}
