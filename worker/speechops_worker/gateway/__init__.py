"""The streaming gateway: WebSocket in front of Triton, one per worker pod.

Protocol (version 1)
====================

Connect a WebSocket to ``ws://HOST:8080/v1/stream`` (``names.GATEWAY_PORT``).

Client -> gateway
-----------------
1. One text frame, the start message::

       {"type": "start", "pipeline": "default", "sample_rate": 16000,
        "encoding": "pcm_s16le",
        "options": {"partial_interval_ms": 500, "partials": true,
                    "vad_probs": false, "prompt": "Kubernetes Triton"}}

   ``pipeline`` may be left out when the gateway serves one pipeline. ``sample_rate``:
   8000, 16000, 24000 or 48000 (default: the pipeline's spec.streams.sampleRate),
   resampled to 16 kHz; ``encoding``: ``pcm_s16le`` (default), or ``mulaw``/``alaw``
   (G.711, 8 kHz). Other fields are refused. ``options`` are all optional.
2. Binary frames of audio as declared, any whole number of samples up to 1 s each; 20 ms
   (640 bytes at 16 kHz) is typical. Send them in real time or faster (the gateway stops reading
   a client that is too far ahead, TCP then pushes back).
3. ``{"type": "commit"}`` (optional, any time): the audio sent so far ends the current
   utterance; its ``final`` (reason ``commit``) follows without waiting for a pause.
4. ``{"type": "stop"}``: the audio so far is transcribed, then ``closed`` arrives.

Gateway -> client (text frames, one JSON object each)
----------------------------------------------------
Every event has ``type`` and ``server_time`` (Unix seconds). Every result names the
audio it covers as ``start_s``/``end_s``, seconds from the stream's first sample.

``ready``      accepted: ``pipeline``, ``stream``, ``stages``, ``partial_interval_s``,
               ``context_window_s``, ``level`` (the current degradation level).
``vad``        ``event`` is ``speech_start`` or ``speech_end`` (with ``discarded``: true
               when the segment was too short to be speech), or ``prob`` per 32 ms chunk
               when ``vad_probs`` is set; ``utterance`` numbers utterances from 0.
``partial``    ``text``: words that two consecutive decodes agreed on (they never change
               and the final starts with them); ``unstable``: the rest of the latest
               decode; ``server.latency_ms``: last audio of the partial received -> sent.
``final``      ``text`` of one utterance, ``reason`` (end_of_speech, context_window,
               commit, stop, drain, max_duration, idle_timeout), ``model`` that decoded it,
               ``server.latency_ms``: end of speech detected -> sent.
``stage``      the result of another stage over the utterance, e.g. ``audio_stats``:
               ``result`` = {"RMS_DBFS", "PEAK", "CLIP_RATIO"}.
``degraded``   the gateway is overloaded: ``level`` 1 (partials half as often, optional
               stages skipped) or 2 (no partials, fallback models), ``changes`` in words.
``restored``   back to level 0.
``error``      ``code`` (stable, see ``protocol.E_*``), ``message`` (for people), and
               ``retry_after_s`` when retrying later will work (over_capacity, draining).
               Always followed by ``closed``.
``closed``     ``reason``; the gateway then closes the WebSocket.

Bad input (invalid JSON, unknown pipeline, wrong sample rate or encoding, odd-length or
oversized frames, audio before ``start``) ends that stream with ``error`` + ``closed``;
other streams are untouched. A client that stops reading its events is disconnected.

Modules
=======
``native`` (this protocol over picows) and other protocols -> ``session`` (one stream's
state; its interface is in its docstring) -> ``pipeline`` (the stage DAG) -> ``packer``
(rows of many streams per request) -> ``inference`` (the Triton client). ``server`` holds
what streams share (admission, drain, background loops), ``degrade`` the overload levels,
``admin`` the HTTP endpoints, ``metrics`` the series.
"""
