DROP TABLE revoked_tokens;
DROP TABLE admin_sessions;
DROP TABLE admins;
