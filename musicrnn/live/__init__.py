"""Real-time play: the model answers a musician over MIDI ports (``musicrnn serve``).

Modules, one job each:
- ``clock``: where the beat is now (internal tempo, or MIDI clock from the input).
- ``scheduler``: the one thread that sends to the output; every note-on gets its note-off.
- ``midi_ports``: the one place that opens MIDI ports (mido + python-rtmidi), and lists them.
- ``engine``: the model's side of a session: RNN state, one model step per event, sampling.
- ``modes``: what the model does when: call-response, duet, autoplay.
- ``controls``: the MIDI CC map (default and learnable).
- ``server``: wires ports, queues, engine and scheduler together; the control API.
"""
