"""Operations shared by the API and the admin CLI (below the API, above the library)."""
