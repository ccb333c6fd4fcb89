"""Dependency aliases read from ``app.state``."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from services.gateway.resources import Gateway


def get_gateway(request: Request) -> Gateway:
    return request.app.state.gateway


GatewayDep = Annotated[Gateway, Depends(get_gateway)]
