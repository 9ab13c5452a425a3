-- Resources, one row each, keyed by kind, mesh ('' for a Mesh) and name.
-- COLLATE "C" orders by bytes, as every other store lists (mesh, then name),
-- whatever the database's locale.
CREATE TABLE resources (
	kind              text COLLATE "C" NOT NULL,
	mesh              text COLLATE "C" NOT NULL,
	name              text COLLATE "C" NOT NULL,
	version           bigint NOT NULL,
	spec              bytea  NOT NULL, -- the spec's JSON
	creation_time     bigint NOT NULL, -- Unix nanoseconds
	modification_time bigint NOT NULL, -- Unix nanoseconds
	PRIMARY KEY (kind, mesh, name)
);
-- Cascading deletion of a mesh finds its resources by mesh.
CREATE INDEX resources_by_mesh ON resources (mesh) WHERE mesh <> '';
