-- First start of the postgres service: pgvector in Sovereign's database, and Langfuse's database.
CREATE EXTENSION IF NOT EXISTS vector;
CREATE DATABASE langfuse;
