/**
 * Where the test servers are. Tests read these two variables only; they default to the
 * services every development machine of this project runs (README, "Development").
 */
export const TEST_DATABASE_URL = process.env['TEST_DATABASE_URL'] ?? 'postgres://root@127.0.0.1:5432/test'
export const TEST_AMQP_URL = process.env['TEST_AMQP_URL'] ?? 'amqp://guest:guest@127.0.0.1:5672/'
