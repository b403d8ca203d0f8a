import type { Command } from 'commander';
import type pg from 'pg';
import type { BridgeConfig } from '../config.js';

/** What cli.ts hands each command module: config from flags/env/file, and one connected client. */
export type ConfigFrom = (cmd: Command) => BridgeConfig;
export type WithClient = <T>(config: BridgeConfig, fn: (client: pg.Client) => Promise<T>) => Promise<T>;
