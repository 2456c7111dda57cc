"""How the OpenAPI schema describes our authentication (bearer token or HTTP basic)."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class TokenAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "tamma_metrics.access.authentication.TokenAuthentication"
    name = ["tammaToken", "tammaBasic"]

    def get_security_definition(self, auto_schema):  # noqa: ANN001, ANN201 - library hook
        return [
            {
                "type": "http",
                "scheme": "bearer",
                "description": "An API token: tmm_<prefix>_<secret>.",
            },
            {"type": "http", "scheme": "basic", "description": "A Django user."},
        ]
