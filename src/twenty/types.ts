/**
 * Contract of the Twenty source: what Twenty's core metadata says about the workspace tables the
 * bridge streams. Loaded from `core.workspace`, `core."dataSource"`, `core."objectMetadata"` and
 * `core."fieldMetadata"`; the route stage turns rows of these tables into the records Twenty presents.
 */

/** One active field of an object, as `core."fieldMetadata"` describes it. */
export interface TwentyField {
  name: string;
  /** Twenty's field type: TEXT, FULL_NAME, EMAILS, RELATION, ... */
  type: string;
  /**
   * The column holding a many-to-one relation's target id (`companyId` for `company`), null for other
   * fields. Such a relation is presented as that flat column, as Twenty does.
   */
  joinColumn: string | null;
}

/** One active object of one workspace, and the table its records live in. */
export interface TwentyObject {
  /** `core."objectMetadata".id`: `objectMetadata.id` in the body. */
  id: string;
  workspaceId: string;
  nameSingular: string;
  isCustom: boolean;
  schema: string;
  /** `nameSingular`, or `_nameSingular` for a custom object. */
  table: string;
  fields: readonly TwentyField[];
}

/** Everything the bridge streams in Twenty mode, keyed by the table's place in the database. */
export interface TwentyCatalog {
  /** The object whose records live in `schema.table`; undefined for any other table. */
  objectFor(schema: string, table: string): TwentyObject | undefined;
  /** Every table to stream, in a stable order. */
  readonly objects: readonly TwentyObject[];
  /** Workspaces with a schema (the ones that can have records). */
  readonly workspaceCount: number;
}
