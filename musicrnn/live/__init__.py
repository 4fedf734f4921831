"""Real-time play: the model answers a musician over MIDI ports and OSC (``musicrnn serve``).

Modules, one job each:
- ``clock``: where the beat is now (internal tempo, or MIDI clock from the input).
- ``scheduler``: the one thread that sends to the output; every note-on gets its note-off.
- ``midi_ports``: the one place that opens MIDI ports (mido + python-rtmidi), and lists them.
- ``engine``: the model's side of a session: RNN state, one model step per event, sampling.
- ``modes``: what the model does when: call-response, duet, autoplay.
- ``controls``: the MIDI CC map (default and learnable).
- ``osc``: the OSC address table: dispatcher, argument checks and docs/osc.md from one place.
- ``osc_server``: OSC over UDP (bundles, time tags, subscribers as a sink of the scheduler).
- ``server``: wires ports, queues, engine and scheduler together; the control API.
"""
