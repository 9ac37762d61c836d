"""A small, fast keep-alive HTTP/1.1 server for benchmarks (asyncio, standard library):
answers every request with 200 and a short body, so that the proxies are what is measured."""
import asyncio
import os

BODY = b"hello from " + os.environ.get("PORT", "?").encode()
RESPONSE = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: "
            + str(len(BODY)).encode() + b"\r\n\r\n" + BODY)


async def serve(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:].strip())
            if length:
                await reader.readexactly(length)
            writer.write(RESPONSE)
            if b"connection: close" in head.lower():
                break
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ValueError):
        pass
    writer.close()


async def main():
    server = await asyncio.start_server(serve, "0.0.0.0", int(os.environ["PORT"]), backlog=1024)
    print("fast: serving on port", os.environ["PORT"], flush=True)
    async with server:
        await server.serve_forever()

asyncio.run(main())
