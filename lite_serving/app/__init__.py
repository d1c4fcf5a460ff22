"""The application: routes, the predict and error policy, the development page, the docs page, the OpenAPI document, metrics."""
