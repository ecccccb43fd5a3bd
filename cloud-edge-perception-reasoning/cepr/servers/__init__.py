"""The servers cepr starts and stops for a job or a test: the reference cloud expert, vLLM's and llama.cpp's
OpenAI servers, and Redis. One lifecycle for all of them (:mod:`cepr.servers.autoserve`): a free loopback port,
a health check before first use, output drained into a bounded tail that start-up errors quote, and a stop that
follows the parent (a child dies with the process that started it). The edge service (:mod:`cepr.serve`) keeps
its own, because it is the process a user runs, not one cepr starts."""
