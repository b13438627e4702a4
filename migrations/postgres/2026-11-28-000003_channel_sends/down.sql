DROP TABLE IF EXISTS channel_sends;
