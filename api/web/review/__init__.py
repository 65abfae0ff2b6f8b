"""The stewards' review pages under `/review`: the pages (pages), their sessions (session), templates/ and static/."""
