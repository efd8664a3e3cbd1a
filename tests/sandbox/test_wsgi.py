"""The sandbox's keep-alive WSGI server, over real sockets."""

from __future__ import annotations

import http.client
import json
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest

from lambda_rollouts.sandbox.wsgi import KeepAliveWsgiServer


def echo(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    if environ["PATH_INFO"] == "/boom":
        raise RuntimeError("the application failed")
    body = environ["wsgi.input"].read()
    answer = {
        "method": environ["REQUEST_METHOD"],
        "path": environ["PATH_INFO"],
        "query": environ["QUERY_STRING"],
        "body": body.decode(),
        "header": environ.get("HTTP_X_TEST"),
    }
    # No Content-Length from the application: the server adds it. A hop-by-hop header is dropped.
    start_response("201 Created", [("Content-Type", "application/json"), ("Connection", "close")])
    return [json.dumps(answer).encode()[:5], json.dumps(answer).encode()[5:]]


@pytest.fixture
def server() -> Iterator[KeepAliveWsgiServer]:
    running = KeepAliveWsgiServer(echo, "127.0.0.1")
    running.start()
    yield running
    running.stop()


def connect(server: KeepAliveWsgiServer) -> http.client.HTTPConnection:
    host, port = server.address
    return http.client.HTTPConnection(host, port, timeout=5)


def test_one_connection_carries_many_requests(server: KeepAliveWsgiServer) -> None:
    connection = connect(server)
    sockets = []
    for index in range(3):
        connection.request("POST", f"/a%20b?n={index}", body=f"body {index}", headers={"X-Test": "yes"})
        response = connection.getresponse()
        assert response.status == 201
        assert response.getheader("Connection") is None
        body = response.read()
        assert response.getheader("Content-Length") == str(len(body))
        assert json.loads(body) == {
            "method": "POST",
            "path": "/a b",
            "query": f"n={index}",
            "body": f"body {index}",
            "header": "yes",
        }
        sockets.append(connection.sock)
    assert sockets[0] is not None
    assert sockets == [sockets[0]] * 3  # never reconnected
    connection.request("GET", "/x")
    assert json.loads(connection.getresponse().read()) == {
        "method": "GET",
        "path": "/x",
        "query": "",
        "body": "",
        "header": None,
    }
    connection.close()


def test_request_bodies_by_length_and_chunked(server: KeepAliveWsgiServer) -> None:
    connection = connect(server)
    connection.request("PUT", "/a%20b?q=1", body=b"by length")
    assert json.loads(connection.getresponse().read())["body"] == "by length"
    connection.request("PUT", "/c", body=iter([b"in ", b"chunks"]), encode_chunked=True)
    answer = json.loads(connection.getresponse().read())
    assert (answer["path"], answer["body"]) == ("/c", "in chunks")
    connection.close()


def test_an_application_error_is_a_500_and_the_connection_survives(server: KeepAliveWsgiServer) -> None:
    connection = connect(server)
    connection.request("GET", "/boom")
    response = connection.getresponse()
    assert (response.status, response.read()) == (500, b"RuntimeError\n")
    connection.request("GET", "/fine")
    assert connection.getresponse().status == 201
    connection.close()


def test_a_client_asking_to_close_is_answered_then_closed(server: KeepAliveWsgiServer) -> None:
    connection = connect(server)
    connection.request("GET", "/x", headers={"Connection": "close"})
    response = connection.getresponse()
    assert response.getheader("Connection") == "close"
    response.read()
    assert response.will_close


def test_stop_closes_open_connections_and_the_port() -> None:
    server = KeepAliveWsgiServer(echo, "127.0.0.1")
    server.start()
    connection = connect(server)
    connection.request("GET", "/x")
    connection.getresponse().read()
    server.stop()
    # The server shut the connection down: the client reads its end.
    assert connection.sock is not None
    connection.sock.settimeout(5)
    assert connection.sock.recv(1) == b""
    with pytest.raises(ConnectionRefusedError):
        connect(server).request("GET", "/x")
