"""Real-time play: the model answers a musician over MIDI ports and OSC (``musicrnn serve``).

Modules, one job each:
- ``clock``: where the beat is now (internal tempo, or MIDI clock from the input).
- ``scheduler``: the one thread that sends to the output; every note-on gets its note-off.
- ``midi_ports``: the one place that opens MIDI ports (mido + python-rtmidi), and lists them.
- ``engine``: the model's side of a session: RNN state, one model step per event, sampling.
- ``accompany``: the engine of accompany mode (a codec with roles): the player's melody frame
  by frame, the model's accompaniment after it.
- ``modes``: the conductor: what the model does when (answers, listening, time passing).
- ``play_modes``: the live modes, one class each (call-response, accompany, duet, autoplay), and their registry.
- ``control_table``: every live control in one table (type, range, default, CC, OSC, CLI flag,
  status field, what it does); the CC map, OSC routes, CLI choices, status and docs come from it.
- ``controls``: the MIDI CC map (default and learnable), made from the table.
- ``osc``: the OSC address table: dispatcher, argument checks and docs/osc.md from one place.
- ``osc_server``: OSC over UDP (bundles, time tags, subscribers as a sink of the scheduler).
- ``server``: wires ports, engine, conductor and scheduler together; the control API; the status.
- ``inbox``: the inbox of events and commands, and the threads that work it off.
- ``terminal``: ``musicrnn serve`` in a terminal: runs a session until Ctrl-C, the status line.

Add a control: a row in ``control_table`` and a one-line method on ``server.Server``. Add a
live mode: a class in ``play_modes`` and its registry line. Then regenerate docs/osc.md
(``python -m musicrnn.live.osc --write-docs``).
"""
