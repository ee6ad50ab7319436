"""The MIDI drivers and what they share (map: docs/architecture.md, "Where things are").

* ``link.py`` (:class:`MidiLink`, ports by name pattern), ``parser.py`` (bytes -> messages),
  ``helper_proc.py`` (the Python helper process that owns the ports), ``jackmidi/`` (the
  native JACK helper, C), ``jackwatch.py`` (JACK queries through ctypes).
* Drivers: ``generic.py`` (kind ``generic_midi``, with ``profiles.py`` / ``profile_spec.py``
  and ``learn.py``, the ``studio-bridge learn`` command), ``mackie.py`` (kind ``mackie``: the
  link and handshake) over ``mackie_render.py`` (state -> bytes, keys -> commands; no I/O) and
  ``mackie_codec.py`` (the protocol's bytes), ``mmc.py`` (kinds ``mmc``, ``mmc_in``).

Nothing is imported here: the helper process (``python -m bridge.devices.midi.helper_proc``)
starts without rtmidi's daemon-side machinery.
"""
