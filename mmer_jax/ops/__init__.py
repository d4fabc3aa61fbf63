"""Small numerical pieces with their own tests."""
