// MusicRNN: play with `musicrnn serve` over OSC from SuperCollider, and hear its answers.
//
//   m = MusicRNN(9000);                  // musicrnn serve ... --osc-port 9000 on this machine
//   m.note(60, 90, 0.3);                 // a player's note: pitch, velocity, seconds
//   m.noteOn(64, 90); m.noteOff(64);     // or held notes
//   m.generate(2);                       // call-response: answer now, for 2 bars
//   m.set(\temperature, 0.8); m.set(\mode, \duet); m.set(\key, "A:minor");
//   m.onNote = { |pitch, vel| [pitch, vel].postln };   // vel 0 = note-off
//   m.free;                              // unsubscribe, release every sounding synth
//
// Answers play on `synthServer` (default: Server.default, when it is running) with the
// SynthDef named by `instrument` (default: \default, which takes freq, amp and gate).
// Every note the model starts is released again: the server sends a note-off for each one.
MusicRNN {
	var <addr, <>synthServer, <>instrument, <>amp, <>onNote, <>onStatus, <>onError;
	var synths, responders;

	*new { |port = 9000, host = "127.0.0.1", synthServer|
		^super.new.init(port, host, synthServer)
	}

	init { |port, host, argServer|
		addr = NetAddr(host, port);
		synthServer = argServer ? Server.default;
		instrument = \default;
		amp = 0.2;
		synths = IdentityDictionary.new;
		responders = [
			OSCFunc({ |msg| this.prNoteOn(msg[1].asInteger, msg[2].asInteger) }, '/musicrnn/out/note_on', addr),
			OSCFunc({ |msg| this.prNoteOff(msg[1].asInteger) }, '/musicrnn/out/note_off', addr),
			OSCFunc({ |msg| onStatus.value(msg[1..]) }, '/musicrnn/status', addr),
			OSCFunc({ |msg| ("musicrnn: " ++ msg[1]).warn; onError.value(msg[1]) }, '/musicrnn/error', addr)
		];
		this.subscribe;
	}

	// notes the player plays
	noteOn { |pitch, vel = 100| addr.sendMsg('/musicrnn/note_on', pitch.asInteger, vel.asInteger) }
	noteOff { |pitch| addr.sendMsg('/musicrnn/note_off', pitch.asInteger) }
	note { |pitch, vel = 100, dur = 0.25| addr.sendMsg('/musicrnn/note', pitch.asInteger, vel.asInteger, dur.asFloat) }

	// what the model does
	generate { |bars| if(bars.isNil) { addr.sendMsg('/musicrnn/generate') } { addr.sendMsg('/musicrnn/generate', bars.asFloat) } }
	stop { addr.sendMsg('/musicrnn/stop') }
	panic { addr.sendMsg('/musicrnn/panic') }
	reset { addr.sendMsg('/musicrnn/reset') }
	status { addr.sendMsg('/musicrnn/status') }
	load { |path| addr.sendMsg('/musicrnn/load', path.asString) }
	// any control of docs/osc.md: set(\temperature, 0.8), set(\range, 48, 84), set(\mode, \duet)
	set { |control ... args|
		addr.sendMsg(*(["/musicrnn/" ++ control.asString] ++ args.collect { |a| if(a.isKindOf(Symbol)) { a.asString } { a } }))
	}

	// the answers come back to sclang's own port
	subscribe { addr.sendMsg('/musicrnn/subscribe') }
	unsubscribe { addr.sendMsg('/musicrnn/unsubscribe') }

	free {
		this.unsubscribe;
		responders.do(_.free);
		synths.do { |s| s.release };
		synths.clear;
	}

	prNoteOn { |pitch, vel|
		onNote.value(pitch, vel);
		if(synthServer.notNil and: { synthServer.serverRunning }) {
			synths.removeAt(pitch) !? { |old| old.release };
			synths[pitch] = Synth(instrument, [\freq, pitch.midicps, \amp, amp * vel / 127], synthServer);
		}
	}

	prNoteOff { |pitch|
		onNote.value(pitch, 0);
		synths.removeAt(pitch) !? { |s| s.release };
	}
}
