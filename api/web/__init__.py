"""The HTTP faces of the service (Flask): the application factory (app), authentication (auth), errors, the
blueprints of the API, the OpenAPI document, and the stewards' review pages (review/)."""
