DROP TABLE deliveries;
DROP TABLE notifications;
DROP TABLE pairing_codes;
DROP TABLE api_tokens;
DROP TABLE device_tokens;
DROP TABLE devices;
