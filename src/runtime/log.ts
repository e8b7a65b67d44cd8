import pino from 'pino';

/** One structured line per event. Request bodies and secret values are never logged. */
export const log = pino({
  level: process.env.HOOKYARD_LOG_LEVEL ?? 'info',
  base: { component: process.env.HOOKYARD_COMPONENT },
  redact: { paths: ['*.authorization', '*.secret', '*.token', '*.password'], censor: '[redacted]' },
});
export type Logger = pino.Logger;
