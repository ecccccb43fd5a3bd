"""A small RTSP server for tests: GStreamer's RTSP server (gst-rtsp-server through PyGObject) on loopback.

It serves a folder of frames (PNG or JPEG, read in sorted order and looped) as a live H.264 (or MJPEG) stream at
``rtsp://HOST:PORT/PATH``. It runs under the SYSTEM python (``/usr/bin/python3``, Debian's ``python3-gi`` and
``gir1.2-gst-rtsp-server-1.0``), not the project's environment, and needs nothing but the standard library and gi::

    /usr/bin/python3 tests/serve/rtsp_server.py --frames DIR [--port 0] [--path walk] [--fps 10] [--codec h264]

``--port 0`` (the default) lets the kernel pick a free port. Once it listens, it prints one line,
``RTSP READY rtsp://127.0.0.1:PORT/PATH``, and flushes; for each SETUP a client sends, it prints
``RTSP SETUP <the request's Transport header>`` (``RTP/AVP/TCP;...`` when the client asked for RTP over the RTSP
connection, ``RTP/AVP;unicast;client_port=...`` for UDP). It exits 0 on SIGTERM or SIGINT. Every client gets its own
pipeline, starting at the first frame. The frames are pushed with their timestamps (frame n at n/fps), and the
server's sinks play them at that pace, so the stream is live at ``--fps``.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

SUFFIXES = {".png": ("image/png", "pngdec"), ".jpg": ("image/jpeg", "jpegdec"), ".jpeg": ("image/jpeg", "jpegdec")}
ENCODERS = {
    # H.264 as most IP cameras send it: no B-frames and an I-frame every second, so a client that joins late
    # decodes within a second
    "h264": "x264enc tune=zerolatency speed-preset=ultrafast bframes=0 key-int-max={gop} "
            "! video/x-h264,profile=baseline ! rtph264pay name=pay0 pt=96 config-interval=1",
    # Motion JPEG over RTP (RFC 2435), the other common camera form
    "mjpeg": "jpegenc quality=85 ! rtpjpegpay name=pay0 pt=26",
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", required=True, help="a folder of .png or .jpg frames (sorted by name, looped)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0, help="0: a free port, printed on the ready line")
    ap.add_argument("--path", default="walk", help="the stream's path: rtsp://HOST:PORT/PATH")
    ap.add_argument("--fps", type=float, default=10.0)
    ap.add_argument("--codec", choices=sorted(ENCODERS), default="h264")
    args = ap.parse_args(argv)

    folder = Path(args.frames)
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in SUFFIXES) if folder.is_dir() else []
    if not files:
        print(f"rtsp_server: no .png/.jpg frames in {folder}", file=sys.stderr)
        return 2
    kinds = {SUFFIXES[p.suffix.lower()] for p in files}
    if len(kinds) > 1:
        print(f"rtsp_server: {folder} mixes PNG and JPEG frames; use one kind", file=sys.stderr)
        return 2
    if args.fps <= 0:
        print(f"rtsp_server: --fps must be > 0, got {args.fps}", file=sys.stderr)
        return 2
    (caps, decoder), = kinds
    blobs = [p.read_bytes() for p in files]

    import gi

    gi.require_version("Gst", "1.0")
    gi.require_version("GstRtspServer", "1.0")
    gi.require_version("GstRtsp", "1.0")
    from gi.repository import GLib, Gst, GstRtsp, GstRtspServer

    Gst.init(None)
    num, den = round(args.fps * 1000), 1000
    duration = Gst.util_uint64_scale_int(Gst.SECOND, den, num)
    launch = (f"( appsrc name=src is-live=true format=time do-timestamp=false "
              f"caps={caps},framerate={num}/{den} ! {decoder} ! videoconvert ! video/x-raw,format=I420 ! "
              + ENCODERS[args.codec].format(gop=max(1, round(args.fps))) + " )")

    def need_data(src, _length, state):
        data = blobs[state["n"] % len(blobs)]
        buf = Gst.Buffer.new_wrapped(data)
        buf.pts = buf.dts = state["n"] * duration
        buf.duration = duration
        state["n"] += 1
        src.emit("push-buffer", buf)

    def configure(_factory, media):
        src = media.get_element().get_child_by_name("src")
        src.connect("need-data", need_data, {"n": 0})  # each client from the first frame

    def on_setup(_client, ctx):
        res, transport = ctx.request.get_header(GstRtsp.RTSPHeaderField.TRANSPORT, 0)
        print(f"RTSP SETUP {transport if res == GstRtsp.RTSPResult.OK else '?'}", flush=True)

    server = GstRtspServer.RTSPServer()
    server.connect("client-connected", lambda _srv, client: client.connect("setup-request", on_setup))
    server.set_address(args.host)
    server.set_service(str(args.port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(launch)
    factory.set_shared(False)
    factory.connect("media-configure", configure)
    server.get_mount_points().add_factory("/" + args.path.strip("/"), factory)
    if server.attach(None) == 0:
        print(f"rtsp_server: cannot listen on {args.host}:{args.port}", file=sys.stderr)
        return 1

    loop = GLib.MainLoop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, sig, lambda *_: (loop.quit(), False)[1])
    print(f"RTSP READY rtsp://{args.host}:{server.get_bound_port()}/{args.path.strip('/')}", flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
