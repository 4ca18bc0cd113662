#pragma once
// a directory the check does not place: refused
